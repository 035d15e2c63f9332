# tokenize / detokenize, including prev_tokens and special tokens.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, vocab_only=True)
tokens = llm.tokenize(b"Hello, world!")
assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)
assert llm.detokenize(tokens) == b"Hello, world!"
head, tail = tokens[:2], tokens[2:]
assert llm.detokenize(head) + llm.detokenize(tail, prev_tokens=head) == b"Hello, world!"
assert llm.detokenize(tail, head) == llm.detokenize(tail, prev_tokens=head)
special = llm.tokenize(b"<|im_start|>user", add_bos=False, special=True)
assert llm.detokenize(special, special=True) == b"<|im_start|>user"
assert llm.tokenize(b"Hi", False, False) == llm.tokenize(b"Hi", add_bos=False, special=False)
