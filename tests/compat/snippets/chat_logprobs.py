# create_chat_completion with logprobs / top_logprobs (OpenAI's chat logprobs shape).
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH)
response = llm.create_chat_completion(
    messages=[{"role": "user", "content": "Hello"}], max_tokens=6, logprobs=True, top_logprobs=2)
check_chat_completion(response)
for item in response["choices"][0]["logprobs"]["content"]:
    assert isinstance(item["token"], str) and isinstance(item["logprob"], float)
    assert all(set(t) >= {"token", "logprob"} for t in item["top_logprobs"])
