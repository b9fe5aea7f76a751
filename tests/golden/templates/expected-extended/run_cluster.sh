#!/bin/sh
# Written by psmpi.prep_batch: submits each pset directory's jobscript_cluster
# with `sbatch --parsable`. Lines of earlier prep_batch calls are commented out.
cd "$(dirname "$0")" || exit 1
# (cd 9c846fe1ccdc53cb49eb76e1611fa271 && sbatch --parsable jobscript_cluster)  # pset 0: a=1, x=0.5, name='x y'
# (cd 77cedb729c1ac88b973322a91eadaa17 && sbatch --parsable jobscript_cluster)  # pset 1: a=2, x=0.5, name='x y'
(cd c863873d6fa4b248151af4993302890d && sbatch --parsable jobscript_cluster)  # pset 2: a=3, x=0.5, name='x y'
