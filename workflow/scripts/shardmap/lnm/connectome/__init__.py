"""The connectome: the users' runs (``runs``), prepared once into subject shards
(``shards``) that mapping tasks stream through (``reader``)."""
