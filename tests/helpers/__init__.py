"""Models, data and attack settings shared by the tests.

Imported as ``helpers`` (``from helpers.models import make_net``): tests/conftest.py
puts tests/ on sys.path, since pytest's importlib mode puts no test folder there.
The installed package never imports from here.
"""
