"""ctsentinel model chain: data, the paper's networks, training, int8 export, evaluation."""
