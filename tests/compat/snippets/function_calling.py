# README "Function Calling": a forced tool call.
import json
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, chat_format="chatml-function-calling")
response = llm.create_chat_completion(
      messages = [
        {"role": "system", "content": "A chat between a curious user and an artificial intelligence assistant."},
        {"role": "user", "content": "Extract Jason is 25 years old"}
      ],
      tools=[{
        "type": "function",
        "function": {
          "name": "UserDetail",
          "parameters": {
            "type": "object",
            "title": "UserDetail",
            "properties": {"name": {"title": "Name", "type": "string"}, "age": {"title": "Age", "type": "integer"}},
            "required": ["name", "age"]
          }
        }
      }],
      tool_choice={"type": "function", "function": {"name": "UserDetail"}},
      max_tokens=64,
)
check_chat_completion(response)
call = response["choices"][0]["message"]["tool_calls"][0]
assert call["function"]["name"] == "UserDetail"
json.loads(call["function"]["arguments"])
