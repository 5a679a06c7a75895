<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling|Fields|Forms">
  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
      <symbol type="line" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="capstyle" type="QString" value="round"/>
            <Option name="joinstyle" type="QString" value="round"/>
            <Option name="line_color" type="QString" value="70,130,220,180"/>
            <Option name="line_style" type="QString" value="solid"/>
            <Option name="line_width" type="QString" value="0.5"/>
            <Option name="line_width_unit" type="QString" value="MM"/>
          </Option>
        </layer>
      </symbol>
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <fieldConfiguration/>
  <aliases>
    <alias field="length_m" index="1" name="Length (m)"/>
    <alias field="offset_mean_m" index="2" name="Mean offset from the extracted road (m)"/>
    <alias field="offset_p90_m" index="3" name="90th percentile of the offset (m)"/>
    <alias field="layer_feature" index="4" name="Feature of the road layer"/>
  </aliases>
  <layerGeometryType>1</layerGeometryType>
</qgis>
