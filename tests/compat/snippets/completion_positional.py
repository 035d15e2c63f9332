# create_completion / __call__ with positional arguments in llama-cpp-python's order:
# prompt, suffix, max_tokens, temperature, top_p, min_p, typical_p, logprobs, echo, stop.
from llama_cpp import Llama

llm = Llama(MODEL_PATH, verbose=False)
a = llm("Once upon a time", None, 8, 0.0, 0.95, 0.05, 1.0, 2, False, ["."])
b = llm.create_completion("Once upon a time", None, 8, 0.0, 0.95, 0.05, 1.0, 2, False, ["."])
check_completion(a)
assert a["choices"][0]["text"] == b["choices"][0]["text"]
assert a["choices"][0]["logprobs"] is not None and a["usage"]["completion_tokens"] <= 8
