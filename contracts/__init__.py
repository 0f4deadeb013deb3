"""Consumer contracts of the three connectors and their provider verification.

``python -m contracts.generate`` (run from the repository root) drives each
connector against a Pact mock server and rewrites the contract files here.
"""
