# README "JSON Mode".
import json
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, chat_format="chatml")
response = llm.create_chat_completion(
    messages=[
        {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
        {"role": "user", "content": "Who won the world series in 2020"},
    ],
    response_format={"type": "json_object"},
    temperature=0.7,
    max_tokens=64,
)
check_chat_completion(response)
choice = response["choices"][0]
# The test model has random weights: its JSON string may still be open when max_tokens runs out.
# A finished answer must parse; a cut one must at least be a JSON object's beginning.
if choice["finish_reason"] == "stop":
    json.loads(choice["message"]["content"])
else:
    assert choice["finish_reason"] == "length" and choice["message"]["content"].startswith("{")
