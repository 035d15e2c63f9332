# examples/high_level_api/high_level_api_streaming.py, in spirit: stream a completion.
import json
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH)
stream = llm(
    "Question: What are the names of the planets in the solar system? Answer: ",
    max_tokens=48,
    stop=["Q:", "\n"],
    stream=True,
)
text = ""
for output in stream:
    print(json.dumps(output, indent=2))
    check_completion_chunk(output)
    text += output["choices"][0]["text"]
assert output["choices"][0]["finish_reason"] in ("stop", "length")
