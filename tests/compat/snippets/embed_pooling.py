# embed() with explicit pooling types from the llama_cpp namespace.
import llama_cpp

llm = llama_cpp.Llama(model_path=MODEL_PATH, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
vector = llm.embed("Hello, world!", normalize=True)
assert isinstance(vector, list) and len(vector) == llm.n_embd()
assert abs(sum(x * x for x in vector) - 1.0) < 1e-4
per_token = llama_cpp.Llama(model_path=MODEL_PATH, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE)
rows = per_token.embed(["Hello, world!"])[0]
assert len(rows) == len(per_token.tokenize(b"Hello, world!")) and len(rows[0]) == per_token.n_embd()
