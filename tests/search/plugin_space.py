"""NB201 as a plugin space would bring it: no canonical form of its own (every genome is its own), so
only the exported graph can tell that two genomes build one network. Loaded with ``--plugin`` (a file
path), as any plugin would be, so worker processes register it too."""

from hwnas.arch import register_space, space_names
from hwnas.arch.nb201 import NB201Space


class PluginNB201(NB201Space):
    name = "nb201-plugin-test"

    def canonical(self, genome):
        return self.validate(genome)


if PluginNB201.name not in space_names():
    register_space(PluginNB201)
