"""The synthetic dive benchmark: procedurally rendered 3 m springboard dives scored by a simulated panel.

Execution quality is visible in the pixels and the nuisances are not scored; the label noise is the
real judges' noise, calibrated on MTL-AQA. Modules, in the order a video is made:

- :mod:`.calibration`: the real MTL-AQA statistics and the safe loader that recomputes them;
- :mod:`.dive_table`: FINA-style dive codes and difficulty degrees with the real frequencies;
- :mod:`.judging`: the latent panel mean, seven noisy judges and the diving scoring rule;
- :mod:`.execution`: the panel mean turned into five visible faults;
- :mod:`.kinematics`: the body, board and splash motion in metres;
- :mod:`.nuisance`: colours, camera shift and zoom, tempo and lengths that do not change the score;
- :mod:`.camera`: the broadcast-style tracking camera that keeps the diver large in the model's crop;
- :mod:`.render`: Pillow drawing and PyAV H.264 encoding;
- :mod:`.scene`: one video's parameters from (seed, index);
- :mod:`.generate`: the dataset writer (``generate_dataset``) and single clips (``render_dive_video``);
- :mod:`.preview`: contact sheets of what a 112 x 112 model sees;
- :mod:`.readout`: which faults a model reads, from an evaluation and the set's noise-free factors.
"""
