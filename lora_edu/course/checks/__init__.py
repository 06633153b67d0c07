"""Self-checks for the exercises: one module per notebook (nb01, nb02, …), one function per exercise.

Each check takes the learner's answer, prints what is right or precisely what is wrong, and returns
True/False. It never raises on a wrong answer, so a learner's cell always finishes.
"""
