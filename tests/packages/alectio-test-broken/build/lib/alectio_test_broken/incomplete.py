def train(labeled):
    pass
