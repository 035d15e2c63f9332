# save_state / load_state: continue from a saved prompt state.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH)
llm.eval(llm.tokenize(b"The quick brown fox"))
state = llm.save_state()
first = llm.sample(temp=0.0)
llm.reset()
llm.load_state(state)
assert llm.n_tokens == len(llm.tokenize(b"The quick brown fox"))
assert llm.sample(temp=0.0) == first
