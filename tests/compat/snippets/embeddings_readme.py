# README "Embeddings".
import llama_cpp

llm = llama_cpp.Llama(model_path=MODEL_PATH, embedding=True)

embeddings = llm.create_embedding("Hello, world!")
check_embedding_response(embeddings, 1)

# or create multiple embeddings at once

embeddings = llm.create_embedding(["Hello, world!", "Goodbye, world!"])
check_embedding_response(embeddings, 2)
