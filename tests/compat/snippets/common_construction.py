# Construction with parameter sets seen in llama-cpp-python docs and user code.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, n_ctx=2048, n_threads=2, n_batch=256, seed=1337, verbose=False,
            last_n_tokens_size=64, use_mmap=True, rope_freq_base=0.0, rope_freq_scale=0.0,
            n_threads_batch=2, offload_kqv=True, flash_attn=False)
assert llm.n_ctx() >= 2048 and llm.n_vocab() > 0 and llm.n_embd() > 0
assert isinstance(llm.metadata, dict) and llm.metadata["general.architecture"] == "qwen3"
assert isinstance(llm.token_eos(), int) and isinstance(llm.token_bos(), int)
check_completion(llm("Hi", max_tokens=4))
