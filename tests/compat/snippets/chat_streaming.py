# Streaming chat: the first chunk carries the role, later ones content, the last a finish_reason.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, n_ctx=1024)
chunks = llm.create_chat_completion(
    messages=[{"role": "user", "content": "Tell me a joke."}], stream=True, max_tokens=16)
content = ""
for chunk in chunks:
    check_chat_chunk(chunk)
    delta = chunk["choices"][0]["delta"]
    if "role" in delta:
        assert delta["role"] == "assistant"
    content += delta.get("content") or ""
assert chunk["choices"][0]["finish_reason"] in ("stop", "length")
