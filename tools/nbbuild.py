"""Write a notebook from a list of ("md" | "code" | "params", source) cells, outputs empty."""

import sys

import nbformat


def write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, c in enumerate(nb.cells):
        c["id"] = str(i)  # stable ids, the ones nbstripout writes
    nbformat.write(nb, path)


if __name__ == "__main__":
    sys.exit("import this module from a notebook source script")
