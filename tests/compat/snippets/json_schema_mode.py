# README "JSON Schema Mode".
import json
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, chat_format="chatml")
response = llm.create_chat_completion(
    messages=[
        {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
        {"role": "user", "content": "Who won the world series in 2020"},
    ],
    response_format={
        "type": "json_object",
        "schema": {
            "type": "object",
            "properties": {"team_name": {"type": "string"}},
            "required": ["team_name"],
        },
    },
    temperature=0.7,
    max_tokens=64,
)
check_chat_completion(response)
assert isinstance(json.loads(response["choices"][0]["message"]["content"])["team_name"], str)
