# logits_processor / stopping_criteria lists.
import numpy as np
from llama_cpp import Llama, LogitsProcessorList, StoppingCriteriaList

llm = Llama(model_path=MODEL_PATH)
banned = llm.tokenize(b" the", add_bos=False)[0]

def ban(input_ids, scores):
    scores[banned] = -np.inf
    return scores

def three(input_ids, logits):
    return len(input_ids) >= 3 + len(llm.tokenize(b"Once upon a time"))

out = llm("Once upon a time", max_tokens=16, logits_processor=LogitsProcessorList([ban]),
          stopping_criteria=StoppingCriteriaList([three]))
check_completion(out)
assert out["usage"]["completion_tokens"] <= 3
