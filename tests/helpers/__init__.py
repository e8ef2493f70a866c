"""What test modules share, in one place: no test module imports another, nor conftest.

models     the tiny random models and tokenizers built in code (conftest's fixtures export them)
reference  obvious, slow reference implementations the fast paths are tested against
cli        the bertonnx command through typer's CliRunner, and its one-line errors
outputs    the files a bulk job leaves: its output, checkpoints, leftovers
serve      a real uvicorn server in a thread, and the checks on its answers
texts      hostile and ordinary inputs, and hypothesis settings the property tests share
memory     peak resident memory of a command
bundles    damaging a bundle so that only the check under test catches it
"""
