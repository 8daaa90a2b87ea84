"""Facts about the project itself, kept in one place.

``REPO_URL`` is the public repository; the README and the Colab setup cell of every
notebook use it, and a test checks that they agree with it.
"""
REPO_URL = "https://github.com/llmdefinitions/ajuste-fino-de-instrucoes"
PIP_SPEC = f"llmdefinitions[notebooks] @ git+{REPO_URL}.git"
