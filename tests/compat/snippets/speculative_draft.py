# README "Speculative Decoding".
from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

llama = Llama(
    model_path=MODEL_PATH,
    draft_model=LlamaPromptLookupDecoding(num_pred_tokens=2)
)
check_completion(llama("Hello", max_tokens=4))
