"""Motion capture as training footage: a BVH reader and a virtual ceiling camera that projects the
skeletons as the appliance's camera would see them (training-side tools, not edge code)."""
