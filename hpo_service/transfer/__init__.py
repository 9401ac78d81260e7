"""Transfer: learn a compact search region from earlier studies and search inside it.

``select`` picks compatible source studies and their winners, ``fit`` fits a box or an
ellipsoid to the winners in the encoded cube, ``designer`` confines any designer to the
region with warm-start seeds and a negative-transfer guard. Regions themselves are domain
objects (``hpo_service.domain.region``).
"""
