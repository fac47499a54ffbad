"""ClassRanker: automatic selection of good 2D class averages, for Scipion and RELION."""
import re
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "classranker_plugin" / "__init__.py").read_text()).group(1)

setup(
    name="scipion-em-classranker",
    version=VERSION,
    description="Score 2D class averages from 0 (junk) to 1 (good) and auto-select them "
                "(library, command line, RELION External job and Scipion plugin)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="GPLv3",
    python_requires=">=3.9",
    # protocols/ and training/ live at the top of the source tree (the design card's layout) and are
    # installed inside the package, where Scipion looks for <plugin>.protocols.
    packages=[
        "classranker_plugin",
        "classranker_plugin.io",
        "classranker_plugin.features",
        "classranker_plugin.simulation",
        "classranker_plugin.cli",
        "classranker_plugin.viewers",
        "classranker_plugin.wizards",
        "classranker_plugin.protocols",
        "classranker_plugin.training",
    ],
    package_dir={
        "classranker_plugin": "classranker_plugin",
        "classranker_plugin.protocols": "protocols",
        "classranker_plugin.training": "training",
    },
    package_data={"classranker_plugin": ["models/*.pt", "models/*.json", "protocols.conf",
                                         "templates/*.json.template", "example/*"]},
    # The row scanner's inner loops in C (io/_rowscan.c, no dependency but the Python headers).
    # optional: without a compiler the install still succeeds and particle_rows.py uses numpy.
    ext_modules=[Extension("classranker_plugin.io._rowscan", ["classranker_plugin/io/_rowscan.c"],
                           extra_compile_args=["-O3"], optional=True)],
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "pandas",
        "mrcfile",
        "starfile",
        "matplotlib",
    ],
    extras_require={
        "scipion": ["scipion-pyworkflow>=3.11", "scipion-em>=3.11", "scipion-app"],
        "test": ["pytest"],
    },
    entry_points={
        "console_scripts": ["classranker = classranker_plugin.cli.main:main",
                            "classranker_external = classranker_plugin.cli.external:entry_point"],
        "pyworkflow.plugin": ["classranker_plugin = classranker_plugin"],
    },
)
