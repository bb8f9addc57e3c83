"""`inkdeploy build`: a Django project directory in, a versioned artifact of wheels out."""
