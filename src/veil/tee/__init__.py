"""Trusted execution: an attested aggregator (Intel SGX DCAP quotes, or a simulated platform).

Clients check by remote attestation that the aggregator runs exactly the published code before
they send it an update; see docs/tee.md for the threat model. Import the submodules directly.
"""
