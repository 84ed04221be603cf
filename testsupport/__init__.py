"""Helpers shared by tests/ and bench/: the fake ComfyUI and real media made on the fly.

Never imported by the product.
"""
