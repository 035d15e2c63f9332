# README "JSON Mode" construction (chat_format="chatml") with a plain multi-turn chat.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, chat_format="chatml")
response = llm.create_chat_completion(
    messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Who won the world series in 2020?"},
        {"role": "assistant", "content": "The Los Angeles Dodgers won the World Series in 2020."},
        {"role": "user", "content": "Where was it played?"},
    ],
    temperature=0.7,
    max_tokens=16,
)
check_chat_completion(response)
