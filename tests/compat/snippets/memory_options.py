# Memory-related construction options (mlock, quantized KV cache).
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, use_mlock=True, type_k=8, type_v=8, flash_attn=True)
check_completion(llm("Hello", max_tokens=4))
