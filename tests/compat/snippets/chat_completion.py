# README "Chat Completion": messages as system + user dicts.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH)
response = llm.create_chat_completion(
      messages = [
          {"role": "system", "content": "You are an assistant who perfectly describes images."},
          {
              "role": "user",
              "content": "Describe this image in detail please."
          }
      ],
      max_tokens=16,
)
check_chat_completion(response)
print(response["choices"][0]["message"]["content"])
