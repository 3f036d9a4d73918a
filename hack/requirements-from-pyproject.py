"""Print the requirements of pyproject.toml, one a line: the core ones and those of the extras named
on the command line. Lets an image install dependencies in a layer of their own."""
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
print("\n".join(project["dependencies"]))
for extra in sys.argv[2:]:
    print("\n".join(project.get("optional-dependencies", {}).get(extra, [])))
