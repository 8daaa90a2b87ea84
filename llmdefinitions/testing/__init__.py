"""Test helpers shipped with the package (e.g. the stand-in LLM server for the judge)."""
