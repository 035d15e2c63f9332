# Llama.generate's docstring example, and positional arguments in its order.
from llama_cpp import Llama

llama = Llama(MODEL_PATH)
tokens = llama.tokenize(b"Hello, world!")
out = []
for token in llama.generate(tokens, top_k=40, top_p=0.95, temp=1.0, repeat_penalty=1.0):
    print(llama.detokenize([token]))
    out.append(token)
    if len(out) == 8:
        break
assert all(isinstance(t, int) for t in out)
# generate(tokens, top_k, top_p, min_p, typical_p, temp, repeat_penalty, reset)
greedy = []
for token in llama.generate(tokens, 40, 0.95, 0.05, 1.0, 0.0, 1.0, True):
    greedy.append(token)
    if len(greedy) == 4 or token == llama.token_eos():
        break
again = llama.create_completion(tokens, max_tokens=len(greedy), temperature=0.0)
assert llama.detokenize(greedy).decode("utf-8", "replace") == again["choices"][0]["text"]
