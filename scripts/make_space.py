#!/usr/bin/env python
"""Write a Hugging Face Space folder for lorabooth: same as `lorabooth space export DIR`.

    python scripts/make_space.py build/space            # then push build/space to a Gradio Space
"""

import sys

from lorabooth.app.space import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
