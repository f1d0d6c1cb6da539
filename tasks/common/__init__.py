"""Code shared by the built-in tasks that is not a task itself (no entry point): the image
data of the image and long-tail tasks (:mod:`.vision`). Tasks import from here, never from
each other."""
