# The prompt cache API.
from llama_cpp import Llama, LlamaRAMCache

llm = Llama(model_path=MODEL_PATH)
llm.set_cache(LlamaRAMCache(capacity_bytes=2 << 30))
a = llm("The quick brown fox", max_tokens=4, temperature=0.0)
b = llm("The quick brown fox", max_tokens=4, temperature=0.0)
assert a["choices"][0]["text"] == b["choices"][0]["text"]
