# Grammar-constrained completion.
from llama_cpp import Llama, LlamaGrammar

grammar = LlamaGrammar.from_string('root ::= "yes" | "no"')
llm = Llama(model_path=MODEL_PATH)
output = llm("Is the sky blue? Answer: ", grammar=grammar, max_tokens=4)
check_completion(output)
assert output["choices"][0]["text"] in ("yes", "no")
