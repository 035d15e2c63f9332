# create_completion with every documented argument (llama-cpp-python API reference), by keyword.
from llama_cpp import Llama

llm = Llama(model_path=MODEL_PATH, n_ctx=512, seed=42, verbose=False)
output = llm.create_completion(
    prompt="The capital of France is",
    suffix=None,
    max_tokens=12,
    temperature=0.7,
    top_p=0.9,
    min_p=0.05,
    typical_p=1.0,
    logprobs=3,
    echo=False,
    stop=["\n\n"],
    frequency_penalty=0.1,
    presence_penalty=0.1,
    repeat_penalty=1.1,
    top_k=40,
    stream=False,
    seed=7,
    tfs_z=1.0,
    mirostat_mode=0,
    mirostat_tau=5.0,
    mirostat_eta=0.1,
    model="my-model",
)
check_completion(output)
assert output["model"] == "my-model"
lp = output["choices"][0]["logprobs"]
assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"])
assert all(isinstance(d, dict) and len(d) >= 3 for d in lp["top_logprobs"])
