# Python: local virtual environment, wheel, pytest.
# (filled in by the Python work)
.PHONY: venv python test-python
venv:
python:
test-python:
