"""Transform stage: the dbt project (staging -> core facts -> marts), its schedule and sensors."""
