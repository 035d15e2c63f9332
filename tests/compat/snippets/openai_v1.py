# README: create_chat_completion_openai_v1 returns pydantic models (needs the openai package).
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH)
response = llm.create_chat_completion_openai_v1(messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
assert response.choices[0].message.role == "assistant"
