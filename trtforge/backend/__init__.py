"""The only package that imports tensorrt, tensorrt_rtx or polygraphy (always lazily)."""
