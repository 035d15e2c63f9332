# Low-level loop on the high-level object: eval, scores, n_tokens, sample, input_ids.
import numpy as np
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, logits_all=True, n_ctx=256)
tokens = llm.tokenize(b"The quick brown fox")
llm.eval(tokens)
assert llm.n_tokens == len(tokens)
assert llm.scores.shape == (llm.n_ctx(), llm.n_vocab()) and llm.scores.dtype == np.float32
assert list(llm.input_ids[:llm.n_tokens]) == tokens
token = llm.sample(temp=0.0)
assert token == int(np.argmax(llm.scores[llm.n_tokens - 1]))
llm.eval([token])
assert llm.n_tokens == len(tokens) + 1
llm.reset()
assert llm.n_tokens == 0
