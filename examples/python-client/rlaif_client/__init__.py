"""A small Python client of rlaif's gRPC API (Policy and Optimizer services, server reflection).

The stubs are generated from the repository's proto/ by gen.sh; `stubs.load()` imports them and
`channel.connect()` opens a channel that fails fast, with a readable message, when nobody answers.
"""
