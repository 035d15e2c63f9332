# README: "n_gpu_layers=-1 # Uncomment to use GPU acceleration" -- on any install.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, n_gpu_layers=-1, seed=1337, n_ctx=2048)
check_completion(llm("Q: Name the planets in the solar system? A: ", max_tokens=8))
