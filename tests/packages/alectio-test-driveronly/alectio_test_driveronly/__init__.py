"""``ray_mlp`` under the name ``driver_only``: the executor tests install it
where only the tests' own process (Ray's driver) finds it, as a package
installed on the head node and forgotten on the workers."""

from alectio_test_ray import assign_index, infer, model_info, test, train  # noqa: F401
