"""Backends the step loop runs on, each behind the protocols of `engine/backends.py`:
`local` (a Hugging Face model in this process) and `remote` (an OpenAI-compatible server)."""
