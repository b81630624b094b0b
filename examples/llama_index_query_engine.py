"""A LlamaIndex query engine over local documents, answered by SpecGuard on the bundled pair.

Retrieval is a keyword table (no embedding model, nothing downloaded). The question needs two
hops through the facts the retriever finds.

    .venv/bin/python examples/llama_index_query_engine.py
"""

from llama_index.core import Document, PromptTemplate, SimpleKeywordTableIndex

from specguard_integrations.llama_index import SpecGuardLLM

DOCS = [
    "The friend of Ann is Bob. The friend of Cal is Dee. The friend of Bob is Eve."
    " The friend of Gus is Hal.",
    "The museum opens at nine and closes at five.",
    "The river runs north through the old town.",
]
# the bundled pair was trained on this question format
QA = PromptTemplate("Facts: {context_str}\nQuestion: {query_str}\n")


def build(llm: SpecGuardLLM):
    index = SimpleKeywordTableIndex.from_documents([Document(text=t) for t in DOCS], llm=llm)
    # the bundled models have a 512-token window: one QA prompt, no refine round
    return index.as_query_engine(llm=llm, text_qa_template=QA, response_mode="simple_summarize")


def main() -> None:
    llm = SpecGuardLLM()
    response = build(llm).query("Who is the friend of the friend of Ann?")
    print("answer:", str(response).strip())
    print("retrieved:", [n.node.get_content() for n in response.source_nodes])


if __name__ == "__main__":
    main()
