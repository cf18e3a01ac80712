"""Map the top-level folders into the single ``tessera`` import namespace.

pyproject.toml cannot express "find every package below app/ and install it as
tessera.app.*", and an explicit list would go stale each time a subpackage is
added; so the list is computed here. Nothing is installed as a bare top-level
``app`` or ``plugins`` module.
"""

from setuptools import find_packages, setup

FOLDERS = {"tessera": "tessera", "app": "tessera.app", "plugins": "tessera.plugins",
           "pipelines": "tessera.pipelines", "resources": "tessera.resources"}

package_dir = {name: folder for folder, name in FOLDERS.items()}
packages = []
for folder, name in FOLDERS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=package_dir)
