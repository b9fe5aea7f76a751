#!/bin/sh
# Written by psmpi.prep_batch: submits each pset directory's jobscript_local
# with `sh`. Lines of earlier prep_batch calls are commented out.
cd "$(dirname "$0")" || exit 1
(cd 9c846fe1ccdc53cb49eb76e1611fa271 && sh jobscript_local)  # pset 0: a=1, x=0.5, name='x y'
(cd 77cedb729c1ac88b973322a91eadaa17 && sh jobscript_local)  # pset 1: a=2, x=0.5, name='x y'
