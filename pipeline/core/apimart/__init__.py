"""APIMart's wan2.7 image API as data and pure rules: its models and their limits,
its prices, what its replies mean, its input-image limits and which links it serves.
"""
