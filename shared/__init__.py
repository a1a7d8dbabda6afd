"""Building blocks shared by the trainers in trainers/ and the Gradio app in space/."""
